//! The gateway inside `echod up` (registered at identity, signing a user in
//! end to end) and `echod serve gateway` on its own.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{Hop, echod, run_with_stdin, start, start_up, up_on_free_ports};

#[tokio::test]
async fn up_runs_the_gateway_as_a_registered_client_and_signs_a_user_in() {
    let dir = echo_testkit::data_dir();
    let mut add = echod(dir.path());
    add.args([
        "user",
        "add",
        "carol",
        "--password-stdin",
        "--role",
        "auditor",
    ]);
    assert!(
        run_with_stdin(add, "carol's long password\n")
            .status
            .success()
    );
    let mut server = start_up(up_on_free_ports(dir.path()));
    assert_eq!(
        server.ready.len(),
        5,
        "identity, audit, gateway, docs, parser"
    );
    let gateway = format!("http://{}", server.ready[2]);
    assert_eq!(
        server.up.as_deref(),
        Some(gateway.as_str()),
        "up <gateway URL>"
    );
    let banner = server.stdout_lines.join("\n");

    let secret_file = dir.path().join("gateway-client.secret");
    let mode = std::fs::metadata(&secret_file)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let secret = std::fs::read_to_string(&secret_file).unwrap();
    assert!(
        !banner.contains(secret.trim()),
        "the secret is never printed"
    );

    let mut browser = Hop::default();
    let (status, landed) = browser
        .sign_in_through_gateway(&server, &gateway, "carol", "carol's long password")
        .await;
    assert_eq!((status.as_u16(), landed.as_str()), (303, "/"));
    let me = browser
        .http
        .get(format!("{gateway}/api/me"))
        .header("x-echo-csrf", "1");
    let (status, _, body) = browser.send(me).await;
    assert_eq!(status, 200, "{body}");
    let me: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(me["name"], "carol");
    assert_eq!(me["roles"], serde_json::json!(["auditor"]));

    // SIGTERM stops every service cleanly.
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "echod up did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn serve_gateway_needs_its_client_secret_and_prints_ready() {
    let dir = echo_testkit::data_dir();
    let out = echod(dir.path())
        .args(["serve", "gateway", "--listen", "127.0.0.1:0"])
        .env_remove("ECHO_GATEWAY_CLIENT_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ECHO_GATEWAY_CLIENT_SECRET"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut cmd = echod(dir.path());
    cmd.args(["serve", "gateway", "--listen", "127.0.0.1:0"])
        .env(
            "ECHO_GATEWAY_CLIENT_SECRET",
            "0123456789abcdef0123456789abcdef",
        );
    let server = start(cmd, 1);
    let health = reqwest::get(format!("http://{}/healthz", server.addr))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert!(dir.path().join("gateway.db").exists());
}

/// Issue 17: "Sign out everywhere" on identity's `/account/sessions` ends
/// the user's gateway sessions too. Identity revokes the user's refresh
/// tokens, the gateway session's among them; the gateway, which confirms a
/// session's refresh token with identity (introspection) at most every
/// 2 s, ends the session at its next use after that.
#[tokio::test]
async fn signing_out_everywhere_at_identity_ends_the_gateway_session() {
    let dir = echo_testkit::data_dir();
    let mut add = echod(dir.path());
    add.args(["user", "add", "dora", "--password-stdin"]);
    assert!(
        run_with_stdin(add, "dora's long password\n")
            .status
            .success()
    );
    let server = start_up(up_on_free_ports(dir.path()));
    let gateway = format!("http://{}", server.ready[2]);
    let identity = format!("http://{}", server.addr);
    let mut browser = Hop::default();
    let (status, landed) = browser
        .sign_in_through_gateway(&server, &gateway, "dora", "dora's long password")
        .await;
    assert_eq!((status.as_u16(), landed.as_str()), (303, "/"));
    let me = |browser: &Hop| {
        browser
            .http
            .get(format!("{gateway}/api/me"))
            .header("x-echo-csrf", "1")
    };
    let (status, _, body) = browser.send(me(&browser)).await;
    assert_eq!(status, 200, "{body}");

    // The browser's SSO session at identity (the same browser signed in
    // there on the way) signs out everywhere.
    let (status, _, page) = browser
        .send(browser.http.get(format!("{identity}/account/sessions")))
        .await;
    assert_eq!(status, 200, "{page}");
    let csrf = page
        .split(r#"name="csrf" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the sessions page's csrf field")
        .to_owned();
    let end_all = browser
        .http
        .post(format!("{identity}/account/sessions/end-all"))
        .form(&[("csrf", csrf)]);
    let (status, _, body) = browser.send(end_all).await;
    assert_eq!(status, 200, "{body}");

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _, body) = browser.send(me(&browser)).await;
        if status == 401 {
            break;
        }
        assert_eq!(status, 200, "{body}");
        assert!(
            Instant::now() < deadline,
            "the gateway session outlived sign out everywhere"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (status, _, _) = browser.send(me(&browser)).await;
    assert_eq!(status, 401, "the session is gone for good");
}
